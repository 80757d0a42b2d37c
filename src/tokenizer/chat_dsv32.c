/* chat_dsv32.c - DeepSeek-V3.2's chat format, which ships as Python, not Jinja.
 *
 * Written from the layout of encoding_dsv32.py in huggingface/transformers
 * (models/deepseek_v32/deepseek_files/encoding) and docs/ARCH.md 8.1, driven the way
 * vLLM's DeepSeek-V3.2 tokenizer drives it:
 *   - thinking mode when kwargs `thinking` or `enable_thinking` is true (or
 *     `thinking_mode` is "thinking"), chat mode otherwise;
 *   - request tools become a leading {"role": "system", "tools": [...]} message;
 *   - the prompt starts with BOS; every user (or developer) turn is
 *     <｜User｜>{content}<｜Assistant｜> then <think> if it is the last user turn in thinking
 *     mode, else </think> (so the generation prompt is part of the format and
 *     add_generation_prompt has no effect);
 *   - assistant turns after the last user turn carry {reasoning_content}</think> in
 *     thinking mode; every assistant turn is {content}{"\n\n" DSML tool calls}
 *     <｜end▁of▁sentence｜>; earlier reasoning is never rendered;
 *   - tool results of one assistant turn are wrapped in <function_results>, each as
 *     \n<result>{content}</result>, followed by \n\n<think> or \n\n</think>;
 *   - in thinking mode, when the conversation ends with a user turn (vLLM's
 *     drop_thinking), messages of other roles (developer) before the last user turn
 *     are left out, as the encoder's drop_thinking_messages does;
 *   - tools (request-level or a message's own) and a message's response_format add
 *     DeepSeek's tool / response-format prompt, whose wording is read at run time from
 *     the checkpoint's encoding/encoding_dsv32.py (see "read from the checkpoint" below):
 *     frontier carries no copy of it, and without that file such requests are refused.
 * Checked against the encoder's published test vector (test_input.json ->
 * test_output.txt: tools, parallel calls, reasoning before and after the last user turn).
 * JSON (tool schemas, non-string arguments) is written as Python's json.dumps with
 * ensure_ascii=False; whole numbers print without ".0" because cJSON keeps no int/float
 * distinction. Content given as a list of text parts is joined with "\n" (vLLM's
 * flattening); a null content is empty (Python would print "None"). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../io/json_util.h"
#include "chat.h"

#define DSML                                                                                                 \
    "\xEF\xBD\x9C"                                                                                           \
    "DSML"                                                                                                   \
    "\xEF\xBD\x9C" /* ｜DSML｜ */
#define BOS_DEFAULT                                                                                          \
    "<\xEF\xBD\x9C"                                                                                          \
    "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"
#define EOS                                                                                                  \
    "<\xEF\xBD\x9C"                                                                                          \
    "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"
#define USER "<\xEF\xBD\x9CUser\xEF\xBD\x9C>"
#define ASSISTANT                                                                                            \
    "<\xEF\xBD\x9C"                                                                                          \
    "Assistant\xEF\xBD\x9C>"

/* The checkpoint's encoding/encoding_dsv32.py, read once per render when first needed. */
typedef struct {
    const char *dir; /* checkpoint directory, or NULL */
    bool looked;     /* the file was looked for */
    char *src;       /* its text with newlines normalised to \n; NULL when absent */
    size_t len;
    char path[4096];
} py_file;

typedef struct {
    char *p;
    size_t n, cap, max;
    fr_error *err;
    fr_status rc;
    int off; /* 1 when a synthetic tools message leads: error messages count the caller's messages */
    py_file *py;
} sbuf;

static void put(sbuf *b, const char *s, size_t n) {
    if (b->rc) return;
    if (n > b->max || b->n > b->max - n) {
        b->rc =
            fr_fail(b->err, FR_ERR_CAPACITY, "DeepSeek-V3.2 prompt exceeds the %zu bytes allowed", b->max);
        return;
    }
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->rc = fr_fail(b->err, FR_ERR_NOMEM, "DeepSeek-V3.2 prompt: out of memory");
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void puts_(sbuf *b, const char *s) { put(b, s, strlen(s)); }

/* Python float repr: shortest round-trip digits, exponent form below 1e-4 or from 1e16. */
static void py_float(double d, char out[48]) {
    char buf[40], digits[24];
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, sizeof buf, "%.*e", p - 1, d);
        if (strtod(buf, NULL) == d) break;
    }
    char *e = strchr(buf, 'e');
    int exp = atoi(e + 1), k = 0;
    for (char *q = buf; q < e; q++)
        if (*q >= '0' && *q <= '9') digits[k++] = *q;
    while (k > 1 && digits[k - 1] == '0') k--;
    char *o = out;
    if (d < 0) *o++ = '-';
    if (exp < -4 || exp >= 16) {
        *o++ = digits[0];
        if (k > 1) *o++ = '.', memcpy(o, digits + 1, (size_t)k - 1), o += k - 1;
        o += sprintf(o, "e%c%02d", exp < 0 ? '-' : '+', abs(exp));
    } else if (exp < 0) {
        *o++ = '0', *o++ = '.';
        for (int i = 0; i < -exp - 1; i++) *o++ = '0';
        memcpy(o, digits, (size_t)k), o += k;
    } else {
        for (int i = 0; i <= exp; i++) *o++ = i < k ? digits[i] : '0';
        *o++ = '.';
        if (k > exp + 1)
            memcpy(o, digits + exp + 1, (size_t)(k - exp - 1)), o += k - exp - 1;
        else
            *o++ = '0';
    }
    *o = 0;
}

static void json_str(sbuf *b, const char *s) {
    put(b, "\"", 1);
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        char esc[8];
        if (c == '"' || c == '\\')
            esc[0] = '\\', esc[1] = (char)c, put(b, esc, 2);
        else if (c == '\n')
            put(b, "\\n", 2);
        else if (c == '\r')
            put(b, "\\r", 2);
        else if (c == '\t')
            put(b, "\\t", 2);
        else if (c == '\b')
            put(b, "\\b", 2);
        else if (c == '\f')
            put(b, "\\f", 2);
        else if (c < 0x20)
            snprintf(esc, sizeof esc, "\\u%04x", c), put(b, esc, 6);
        else
            put(b, p, 1);
    }
    put(b, "\"", 1);
}

/* json.dumps(v, ensure_ascii=False) with the default separators. */
static void py_json(sbuf *b, const cJSON *v, int depth) {
    char num[48];
    if (depth > 1000) {
        if (!b->rc) b->rc = fr_fail(b->err, FR_ERR_FORMAT, "DeepSeek-V3.2 prompt: JSON nested too deeply");
        return;
    }
    if (cJSON_IsNull(v))
        puts_(b, "null");
    else if (cJSON_IsTrue(v))
        puts_(b, "true");
    else if (cJSON_IsFalse(v))
        puts_(b, "false");
    else if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (!isfinite(d))
            puts_(b, d != d ? "NaN" : d < 0 ? "-Infinity" : "Infinity");
        else if (d == trunc(d) && fabs(d) < 1e17)
            snprintf(num, sizeof num, "%.0f", d), puts_(b, num);
        else
            py_float(d, num), puts_(b, num);
    } else if (cJSON_IsString(v))
        json_str(b, v->valuestring);
    else if (cJSON_IsArray(v) || cJSON_IsObject(v)) {
        bool obj = cJSON_IsObject(v);
        put(b, obj ? "{" : "[", 1);
        for (const cJSON *e = v->child; e; e = e->next) {
            if (e != v->child) put(b, ", ", 2);
            if (obj) json_str(b, e->string), put(b, ": ", 2);
            py_json(b, e, depth + 1);
        }
        put(b, obj ? "}" : "]", 1);
    } else if (!b->rc)
        b->rc = fr_fail(b->err, FR_ERR_FORMAT, "DeepSeek-V3.2 prompt: unsupported JSON value");
}

static const cJSON *get(const cJSON *o, const char *k) {
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
}

static const char *role_of(const cJSON *m) {
    const cJSON *r = get(m, "role");
    return cJSON_IsString(r) ? r->valuestring : "";
}

/* Python truthiness of an optional JSON value. */
static bool truthy(const cJSON *v) {
    if (!v || cJSON_IsNull(v) || cJSON_IsFalse(v)) return false;
    if (cJSON_IsNumber(v)) return v->valuedouble != 0;
    if (cJSON_IsString(v)) return v->valuestring[0] != 0;
    if (cJSON_IsArray(v) || cJSON_IsObject(v)) return v->child != NULL;
    return true;
}

/* Message content: a string, null, or a list of {"type": "text", "text": ...} parts. */
static void content(sbuf *b, const cJSON *c, int idx) {
    if (!c || cJSON_IsNull(c)) return;
    if (cJSON_IsString(c)) {
        puts_(b, c->valuestring);
        return;
    }
    if (cJSON_IsArray(c)) {
        bool first = true;
        for (const cJSON *p = c->child; p; p = p->next) {
            const cJSON *ty = get(p, "type"), *tx = get(p, "text");
            if (cJSON_IsString(p))
                tx = p;
            else if (!cJSON_IsString(tx) ||
                     (ty && (!cJSON_IsString(ty) || strcmp(ty->valuestring, "text")))) {
                if (!b->rc)
                    b->rc =
                        fr_fail(b->err, FR_ERR_UNSUPPORTED,
                                "DeepSeek-V3.2 prompt: message %d has a content part that is not text", idx);
                return;
            }
            if (!first) put(b, "\n", 1);
            puts_(b, tx->valuestring);
            first = false;
        }
        return;
    }
    if (!b->rc)
        b->rc = fr_fail(b->err, FR_ERR_FORMAT,
                        "DeepSeek-V3.2 prompt: message %d content must be a string or a list of parts", idx);
}

/* ---- The tool and response-format prompts, read from the checkpoint ---------------------
 * Their wording is DeepSeek's and ships with the checkpoint as module-level constants of
 * encoding/encoding_dsv32.py; frontier carries no copy. When a request needs one, it is read
 * from there (bounded, ENCODING_MAX) and filled in as Python's str.format would:
 *   TOOLS_SYSTEM_TEMPLATE     {dsml_token} {thinking_start_token} {thinking_end_token}
 *                             {tool_schemas} (one JSON schema per line)
 *   response_format_template  {schema}
 * The value must be a str literal: any quoting (' " ''' """), an optional u prefix, Python's
 * escapes and line continuations, adjacent literals concatenated, optionally in parentheses,
 * optionally annotated (`NAME: str = ...`); raw, f- and bytes literals and expressions are
 * refused. The last module-level assignment wins, as in Python. Fields other than the names
 * above (or with a conversion, format spec, index or attribute) are errors; {{ and }} are
 * braces. Prompts without tools or response_format never touch the file. */

#define ENCODING_PY  "encoding/encoding_dsv32.py"
#define ENCODING_MAX ((size_t)1 << 20)

static bool id_char(char c) {
    unsigned char u = (unsigned char)c;
    return u == '_' || (u >= '0' && u <= '9') || ((u | 0x20) >= 'a' && (u | 0x20) <= 'z') || u >= 0x80;
}

static int line_of(const char *src, const char *p) {
    int line = 1;
    for (const char *q = src; q < p; q++) line += *q == '\n';
    return line;
}

/* Find and read the file (once). Sets b->rc, with a one-line message, when it cannot. */
static bool need_file(sbuf *b, const char *what) {
    py_file *f = b->py;
    if (b->rc) return false;
    if (!f->looked) {
        f->looked = true;
        struct stat st;
        if (f->dir) {
            snprintf(f->path, sizeof f->path, "%s/" ENCODING_PY, f->dir);
            if (stat(f->path, &st) == 0) {
                char *t = NULL;
                size_t n = 0;
                if ((b->rc = fr_read_file(f->path, ENCODING_MAX, &t, &n, b->err))) return false;
                size_t w = 0, r = n >= 3 && !memcmp(t, "\xEF\xBB\xBF", 3) ? 3 : 0; /* BOM */
                for (; r < n; r++) /* \r\n and \r read as \n, as Python reads source */
                    if (t[r] != '\r')
                        t[w++] = t[r];
                    else if (r + 1 >= n || t[r + 1] != '\n')
                        t[w++] = '\n';
                t[w] = 0;
                f->src = t, f->len = w;
            } else if (errno != ENOENT && errno != ENOTDIR) {
                b->rc = fr_fail(b->err, FR_ERR_IO, "%s: %s", f->path, strerror(errno));
                return false;
            }
        }
    }
    if (f->src) return true;
    if (f->dir)
        b->rc = fr_fail(b->err, FR_ERR_UNSUPPORTED,
                        "DeepSeek-V3.2 %s come from " ENCODING_PY " in the checkpoint, which %s lacks", what,
                        f->dir);
    else
        b->rc = fr_fail(b->err, FR_ERR_UNSUPPORTED,
                        "DeepSeek-V3.2 %s come from " ENCODING_PY
                        " in the checkpoint, and no checkpoint directory was given",
                        what);
    return false;
}

/* p at an opening quote: just past the literal's closing quote, or NULL when it does not
 * close. A backslash always takes the next character along (raw literals too). */
static const char *skip_string(const char *p, const char *end) {
    char q = *p;
    bool triple = end - p >= 3 && p[1] == q && p[2] == q;
    for (p += triple ? 3 : 1; p < end; p++) {
        if (*p == '\\')
            p++;
        else if (*p == q && (!triple || (end - p >= 3 && p[1] == q && p[2] == q)))
            return p + (triple ? 3 : 1);
        else if (*p == '\n' && !triple)
            return NULL;
    }
    return NULL;
}

/* After the name at the start of a line: just past the '=' of `NAME = ` or `NAME: T = `. */
static const char *assign_value(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    if (p < end && *p == ':') {
        int depth = 0;
        for (p++; p < end; p++) {
            if (*p == '"' || *p == '\'') {
                if (!(p = skip_string(p, end))) return NULL;
                p--;
            } else if (*p == '\\' && p + 1 < end && p[1] == '\n')
                p++;
            else if (*p == '(' || *p == '[' || *p == '{')
                depth++;
            else if (*p == ')' || *p == ']' || *p == '}')
                depth--;
            else if ((*p == '\n' || *p == '#') && depth <= 0)
                return NULL;
            else if (*p == '=' && depth <= 0)
                return p + 1 < end && p[1] == '=' ? NULL : p + 1;
        }
        return NULL;
    }
    return p < end && *p == '=' && !(p + 1 < end && p[1] == '=') ? p + 1 : NULL;
}

/* The value (just past '=') of the last module-level assignment to name, or NULL. *open is
 * set to a string literal that never closes (the file cannot be read further). */
static const char *find_assignment(const char *src, const char *end, const char *name, const char **open) {
    size_t nl = strlen(name);
    const char *found = NULL, *p = src;
    int depth = 0;
    bool bol = true;
    *open = NULL;
    while (p < end) {
        if (bol && depth == 0 && (size_t)(end - p) > nl && !memcmp(p, name, nl) && !id_char(p[nl])) {
            const char *v = assign_value(p + nl, end);
            if (v) found = v;
        }
        bol = false;
        char c = *p;
        if (c == '#') {
            while (p < end && *p != '\n') p++;
        } else if (c == '"' || c == '\'') {
            const char *q = skip_string(p, end);
            if (!q) return *open = p, NULL;
            p = q;
        } else if (c == '\\' && p + 1 < end && p[1] == '\n') {
            p += 2;
        } else {
            if (c == '(' || c == '[' || c == '{')
                depth++;
            else if ((c == ')' || c == ']' || c == '}') && depth > 0)
                depth--;
            else if (c == '\n')
                bol = true;
            p++;
        }
    }
    return found;
}

static void put_utf8(sbuf *o, unsigned long cp) {
    char u[4];
    size_t n;
    if (cp < 0x80)
        u[0] = (char)cp, n = 1;
    else if (cp < 0x800)
        u[0] = (char)(0xC0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
    else if (cp < 0x10000)
        u[0] = (char)(0xE0 | cp >> 12), u[1] = (char)(0x80 | (cp >> 6 & 0x3F)),
        u[2] = (char)(0x80 | (cp & 0x3F)), n = 3;
    else
        u[0] = (char)(0xF0 | cp >> 18), u[1] = (char)(0x80 | (cp >> 12 & 0x3F)),
        u[2] = (char)(0x80 | (cp >> 6 & 0x3F)), u[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
    put(o, u, n);
}

static int hex_value(char c) {
    return c >= '0' && c <= '9'                     ? c - '0'
           : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10
                                                    : -1;
}

static const char NAMED_ESCAPE[] = "\\N{...} escapes are not supported";

/* Decode the str literal whose opening quote is at p onto o. Returns the end, or NULL with
 * *why (and *at, where it went wrong) set. */
static const char *decode_string(sbuf *o, const char *p, const char *end, const char **why, const char **at) {
    char q = *p;
    bool triple = end - p >= 3 && p[1] == q && p[2] == q;
    const char *open = p;
    for (p += triple ? 3 : 1;;) {
        if (p >= end || (*p == '\n' && !triple))
            return *why = "a string literal does not close", *at = open, NULL;
        if (*p == q && (!triple || (end - p >= 3 && p[1] == q && p[2] == q))) return p + (triple ? 3 : 1);
        if (*p != '\\') {
            put(o, p++, 1);
            continue;
        }
        if (p + 1 >= end) return *why = "a string literal does not close", *at = open, NULL;
        char e = p[1];
        const char *esc = p;
        p += 2;
        static const char simple[] = "\\\\''\"\"a\ab\bf\fn\nr\rt\tv\v";
        const char *s = e ? strchr(simple, e) : NULL;
        if (e == '\n') continue; /* line continuation */
        if (s && (s - simple) % 2 == 0) {
            put(o, s + 1, 1);
        } else if (e >= '0' && e <= '7') {
            unsigned long cp = (unsigned long)(e - '0');
            for (int i = 0; i < 2 && p < end && *p >= '0' && *p <= '7'; i++)
                cp = cp * 8 + (unsigned long)(*p++ - '0');
            put_utf8(o, cp);
        } else if (e == 'x' || e == 'u' || e == 'U') {
            int digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            unsigned long cp = 0;
            for (int i = 0; i < digits; i++, p++) {
                int h = p < end ? hex_value(*p) : -1;
                if (h < 0) return *why = "a \\x, \\u or \\U escape lacks hex digits", *at = esc, NULL;
                cp = cp * 16 + (unsigned long)h;
            }
            if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
                return *why = "an escape names no Unicode scalar value", *at = esc, NULL;
            put_utf8(o, cp);
        } else if (e == 'N') {
            return *why = NAMED_ESCAPE, *at = esc, NULL;
        } else { /* Python keeps an unknown escape as it is */
            put(o, esc, 2);
        }
    }
}

/* The string prefix letters w[0..n) as flags (1 raw, 2 bytes, 4 f/t-string), or -1. */
static int str_prefix(const char *w, size_t n) {
    int f = 0;
    if (n > 2) return -1;
    for (size_t i = 0; i < n; i++) {
        int c = w[i] | 0x20, bit = c == 'r' ? 1 : c == 'b' ? 2 : c == 'f' || c == 't' ? 4 : c == 'u' ? 8 : 0;
        if (!bit || (f & bit)) return -1;
        f |= bit;
    }
    return (f & 8 && n > 1) || ((f & 2) && (f & 4)) ? -1 : f;
}

/* Read the str constant `name` from the file into *out (malloc'd, length *len). */
static bool py_constant(sbuf *b, const char *name, const char *what, char **out, size_t *len) {
    *out = NULL;
    if (!need_file(b, what)) return false;
    const py_file *f = b->py;
    const char *src = f->src, *end = src + f->len, *open, *why = NULL, *at = NULL;
    const char *p = find_assignment(src, end, name, &open);
    if (open) {
        b->rc = fr_fail(b->err, FR_ERR_FORMAT, "%s line %d: a string literal does not close (read for %s)",
                        f->path, line_of(src, open), name);
        return false;
    }
    if (!p) {
        b->rc = fr_fail(b->err, FR_ERR_UNSUPPORTED, "%s defines no %s, which DeepSeek-V3.2 %s are made from",
                        f->path, name, what);
        return false;
    }
    sbuf o = {.max = 2 * ENCODING_MAX, .err = b->err};
    int pieces = 0;
    bool paren = false, closed = false, unsupported = false;
    for (;;) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\f' || (paren && *p == '\n') ||
                           (*p == '\\' && p + 1 < end && p[1] == '\n')))
            p += *p == '\\' ? 2 : 1;
        if (paren && p < end && *p == '#') {
            while (p < end && *p != '\n') p++;
            continue;
        }
        if (!pieces && !paren && p < end && *p == '(') {
            paren = true, p++;
            continue;
        }
        if (paren && p < end && *p == ')') {
            closed = true, p++;
            break;
        }
        const char *w = p;
        while (p < end && id_char(*p)) p++;
        if (p >= end || (*p != '"' && *p != '\'')) {
            p = w;
            break;
        }
        int flags = str_prefix(w, (size_t)(p - w));
        if (flags < 0) {
            p = w;
            break;
        }
        if (flags & 7) {
            why = flags & 4   ? "f-strings are not supported (the text must be a plain str literal)"
                  : flags & 1 ? "raw string literals are not supported"
                              : "it is a bytes literal, not a str";
            at = w, unsupported = !(flags & 2);
            break;
        }
        if (!(p = decode_string(&o, p, end, &why, &at))) break;
        pieces++;
    }
    if (!why && (!pieces || paren != closed))
        why = "it is not a string literal (nor adjacent literals in parentheses)", at = p;
    if (!why) {
        while (p < end &&
               (*p == ' ' || *p == '\t' || *p == '\f' || (*p == '\\' && p + 1 < end && p[1] == '\n')))
            p += *p == '\\' ? 2 : 1;
        if (p < end && *p != '\n' && *p != '#' && *p != ';')
            why = "it is an expression, not a plain string literal", at = p;
    }
    if (!why && o.rc) why = "it is too long", at = p;
    if (why) {
        free(o.p);
        if (!b->rc)
            b->rc = fr_fail(b->err, unsupported || why == NAMED_ESCAPE ? FR_ERR_UNSUPPORTED : FR_ERR_FORMAT,
                            "%s line %d: %s: %s", f->path, line_of(src, at), name, why);
        return false;
    }
    if (!o.p) put(&o, "", 0);
    *out = o.p, *len = o.n;
    return true;
}

typedef struct {
    const char *name, *val;
    size_t len;
} fmt_arg;

/* tpl.format(**args) restricted to plain {name} fields. */
static void py_format(sbuf *b, const char *tpl, size_t n, const char *cname, const fmt_arg *args,
                      size_t nargs) {
    for (size_t i = 0; i < n && !b->rc;) {
        size_t j = i;
        while (j < n && tpl[j] != '{' && tpl[j] != '}') j++;
        put(b, tpl + i, j - i);
        if ((i = j) >= n) break;
        if (i + 1 < n && tpl[i + 1] == tpl[i]) { /* {{ or }} */
            put(b, tpl + i, 1);
            i += 2;
            continue;
        }
        if (tpl[i] == '}') {
            b->rc = fr_fail(b->err, FR_ERR_FORMAT, "%s: %s: a single '}' (str.format needs '}}')",
                            b->py->path, cname);
            return;
        }
        size_t k = i + 1;
        while (k < n && tpl[k] != '}' && tpl[k] != '{') k++;
        if (k >= n || tpl[k] == '{') {
            b->rc = fr_fail(b->err, FR_ERR_FORMAT, "%s: %s: a single '{' (str.format needs '{{')",
                            b->py->path, cname);
            return;
        }
        const char *field = tpl + i + 1;
        size_t fl = k - i - 1;
        bool plain = fl > 0 && !(field[0] >= '0' && field[0] <= '9');
        for (size_t x = 0; x < fl; x++) plain = plain && id_char(field[x]) && (unsigned char)field[x] < 0x80;
        const fmt_arg *a = NULL;
        for (size_t x = 0; plain && x < nargs && !a; x++)
            if (strlen(args[x].name) == fl && !memcmp(args[x].name, field, fl)) a = &args[x];
        if (!a) {
            char shown[48], known[160] = "";
            size_t m = fl < sizeof shown - 1 ? fl : sizeof shown - 1;
            for (size_t x = 0; x < m; x++) shown[x] = (unsigned char)field[x] < 0x20 ? '?' : field[x];
            shown[m] = 0;
            for (size_t x = 0; x < nargs; x++)
                snprintf(known + strlen(known), sizeof known - strlen(known), "%s{%s}", x ? " " : "",
                         args[x].name);
            b->rc =
                fr_fail(b->err, FR_ERR_FORMAT, "%s: %s: %s placeholder {%s%s} (it may use %s)", b->py->path,
                        cname, plain ? "unknown" : "unsupported", shown, m < fl ? "..." : "", known);
            return;
        }
        put(b, a->val, a->len);
        i = k + 1;
    }
}

static void render_tools(sbuf *b, const cJSON *tools) {
    char *tpl;
    size_t n;
    if (!py_constant(b, "TOOLS_SYSTEM_TEMPLATE", "tool prompts", &tpl, &n)) return;
    sbuf s = {.max = b->max, .err = b->err};
    for (const cJSON *t = tools->child; t; t = t->next) {
        const cJSON *fn = get(t, "function");
        if (t != tools->child) put(&s, "\n", 1);
        py_json(&s, fn ? fn : t, 0);
    }
    if (s.rc)
        b->rc = s.rc;
    else {
        const fmt_arg args[] = {{"dsml_token", DSML, strlen(DSML)},
                                {"thinking_start_token", "<think>", 7},
                                {"thinking_end_token", "</think>", 8},
                                {"tool_schemas", s.p ? s.p : "", s.n}};
        py_format(b, tpl, n, "TOOLS_SYSTEM_TEMPLATE", args, sizeof args / sizeof *args);
    }
    free(s.p);
    free(tpl);
}

static void response_format(sbuf *b, const cJSON *rf) {
    char *tpl;
    size_t n;
    puts_(b, "\n\n");
    if (!py_constant(b, "response_format_template", "response-format prompts", &tpl, &n)) return;
    sbuf s = {.max = b->max, .err = b->err};
    py_json(&s, rf, 0);
    if (s.rc)
        b->rc = s.rc;
    else {
        const fmt_arg args[] = {{"schema", s.p ? s.p : "", s.n}};
        py_format(b, tpl, n, "response_format_template", args, 1);
    }
    free(s.p);
    free(tpl);
}

/* <｜DSML｜parameter name="k" string="true|false">v</｜DSML｜parameter>, one per line. */
static void tool_arguments(sbuf *b, const cJSON *args, int idx) {
    cJSON *parsed = NULL;
    if (cJSON_IsString(args)) {
        parsed = cJSON_Parse(args->valuestring);
        args = parsed;
    }
    if (!cJSON_IsObject(args)) {
        if (!b->rc)
            b->rc = fr_fail(
                b->err, FR_ERR_FORMAT,
                "DeepSeek-V3.2 prompt: message %d: tool call arguments must be a JSON object or a string holding one",
                idx);
        cJSON_Delete(parsed);
        return;
    }
    for (const cJSON *a = args->child; a; a = a->next) {
        if (a != args->child) put(b, "\n", 1);
        puts_(b, "<" DSML "parameter name=\"");
        puts_(b, a->string);
        puts_(b, cJSON_IsString(a) ? "\" string=\"true\">" : "\" string=\"false\">");
        if (cJSON_IsString(a))
            puts_(b, a->valuestring);
        else
            py_json(b, a, 0);
        puts_(b, "</" DSML "parameter>");
    }
    cJSON_Delete(parsed);
}

static void tool_calls(sbuf *b, const cJSON *calls, int idx) {
    puts_(b, "\n\n<" DSML "function_calls>\n");
    for (const cJSON *tc = calls->child; tc; tc = tc->next) {
        const cJSON *fn = get(tc, "function");
        if (!fn) fn = tc;
        const cJSON *name = get(fn, "name");
        if (!cJSON_IsString(name)) {
            if (!b->rc)
                b->rc = fr_fail(b->err, FR_ERR_FORMAT,
                                "DeepSeek-V3.2 prompt: message %d: tool call without a function name", idx);
            return;
        }
        if (tc != calls->child) put(b, "\n", 1);
        puts_(b, "<" DSML "invoke name=\"");
        puts_(b, name->valuestring);
        puts_(b, "\">\n");
        tool_arguments(b, get(fn, "arguments"), idx);
        puts_(b, "\n</" DSML "invoke>");
    }
    puts_(b, "\n</" DSML "function_calls>");
}

/* Message idx of the conversation msgs (which starts with the tools message if any). */
static void render_message(sbuf *b, const cJSON *const *msgs, int idx, int last_user, bool thinking) {
    const cJSON *m = msgs[idx];
    int shown = idx - b->off;
    const char *role = role_of(m);
    const cJSON *tools = get(m, "tools"), *rf = get(m, "response_format");
    if (!truthy(tools)) tools = NULL;
    if (tools && !cJSON_IsArray(tools)) {
        b->rc =
            fr_fail(b->err, FR_ERR_FORMAT, "DeepSeek-V3.2 prompt: message %d: tools must be a list", shown);
        return;
    }
    if (!strcmp(role, "system")) {
        content(b, get(m, "content"), shown);
        if (tools) puts_(b, "\n\n"), render_tools(b, tools);
        if (truthy(rf)) response_format(b, rf);
    } else if (!strcmp(role, "user") || !strcmp(role, "developer")) {
        puts_(b, USER);
        if (!strcmp(role, "developer")) {
            if (!truthy(get(m, "content"))) {
                b->rc = fr_fail(b->err, FR_ERR_FORMAT,
                                "DeepSeek-V3.2 prompt: message %d: a developer message needs content", shown);
                return;
            }
            if (tools) puts_(b, "\n\n"), render_tools(b, tools);
            if (truthy(rf)) response_format(b, rf);
            puts_(b, "\n\n# The user's message is: ");
        }
        content(b, get(m, "content"), shown);
        puts_(b, ASSISTANT);
        puts_(b, idx == last_user && thinking ? "<think>" : "</think>");
    } else if (!strcmp(role, "tool")) {
        int prev = idx - 1;
        while (prev >= 0 && !strcmp(role_of(msgs[prev]), "tool")) prev--;
        const cJSON *calls =
            prev >= 0 && !strcmp(role_of(msgs[prev]), "assistant") ? get(msgs[prev], "tool_calls") : NULL;
        int order = idx - prev;
        if (!cJSON_IsArray(calls) || cJSON_GetArraySize(calls) < order) {
            b->rc = fr_fail(
                b->err, FR_ERR_FORMAT,
                "DeepSeek-V3.2 prompt: message %d: a tool result needs a preceding assistant message with that many tool_calls",
                shown);
            return;
        }
        if (order == 1) puts_(b, "\n\n<function_results>");
        puts_(b, "\n<result>");
        content(b, get(m, "content"), shown);
        puts_(b, "</result>");
        if (order == cJSON_GetArraySize(calls)) {
            puts_(b, "\n</function_results>");
            puts_(b, idx >= last_user && thinking ? "\n\n<think>" : "\n\n</think>");
        }
    } else if (!strcmp(role, "assistant")) {
        const cJSON *calls = get(m, "tool_calls"), *rc = get(m, "reasoning_content");
        if (!truthy(calls)) calls = NULL;
        if (calls && !cJSON_IsArray(calls)) {
            b->rc = fr_fail(b->err, FR_ERR_FORMAT,
                            "DeepSeek-V3.2 prompt: message %d: tool_calls must be a list", shown);
            return;
        }
        if (thinking && idx > last_user) {
            if (!truthy(rc) && !calls) {
                b->rc = fr_fail(
                    b->err, FR_ERR_FORMAT,
                    "DeepSeek-V3.2 prompt: message %d: in thinking mode an assistant turn after the last user turn needs reasoning_content or tool_calls",
                    shown);
                return;
            }
            if (truthy(rc)) content(b, rc, shown);
            puts_(b, "</think>");
        }
        content(b, get(m, "content"), shown);
        if (calls) tool_calls(b, calls, shown);
        puts_(b, EOS);
    } else {
        b->rc = fr_fail(b->err, FR_ERR_FORMAT, "DeepSeek-V3.2 prompt: message %d has unknown role \"%s\"",
                        shown, role);
    }
}

static int find_last_user(const cJSON *const *msgs, int k) {
    for (int i = k - 1; i >= 0; i--)
        if (!strcmp(role_of(msgs[i]), "user") || !strcmp(role_of(msgs[i]), "developer")) return i;
    return -1;
}

fr_status fr_chat_dsv32_render(const fr_chat_request *req, const char *dir, const char *bos,
                               size_t max_output, char **out, size_t *out_len, fr_error *err) {
    *out = NULL;
    if (!cJSON_IsArray(req->messages))
        return fr_fail(err, FR_ERR_INVALID, "chat: messages must be a JSON array");
    const cJSON *kw = req->kwargs, *mode = get(kw, "thinking_mode");
    bool thinking = truthy(get(kw, "thinking")) || truthy(get(kw, "enable_thinking")) ||
                    (cJSON_IsString(mode) && !strcmp(mode->valuestring, "thinking"));
    int n = cJSON_GetArraySize(req->messages);
    bool with_tools = cJSON_IsArray(req->tools) && req->tools->child;
    const cJSON **msgs = calloc((size_t)n + 1, sizeof *msgs);
    cJSON *tool_msg = NULL;
    if (!msgs) return fr_fail(err, FR_ERR_NOMEM, "DeepSeek-V3.2 prompt: out of memory");
    int k = 0;
    if (with_tools) { /* vLLM: request tools become a leading system message */
        tool_msg = cJSON_CreateObject();
        if (!tool_msg || !cJSON_AddStringToObject(tool_msg, "role", "system") ||
            !cJSON_AddItemReferenceToObject(tool_msg, "tools", (cJSON *)req->tools)) {
            cJSON_Delete(tool_msg);
            free(msgs);
            return fr_fail(err, FR_ERR_NOMEM, "DeepSeek-V3.2 prompt: out of memory");
        }
        msgs[k++] = tool_msg;
    }
    for (const cJSON *m = req->messages->child; m; m = m->next) msgs[k++] = m;
    int last_user = find_last_user(msgs, k);
    /* vLLM passes drop_thinking when the conversation ends with a user turn; in thinking
     * mode the encoder then keeps, before the last user turn, only system, user, tool and
     * assistant messages (reasoning is never rendered there anyway). */
    if (thinking && k > 0 && !strcmp(role_of(msgs[k - 1]), "user")) {
        int w = 0;
        for (int i = 0; i < k; i++) {
            const char *r = role_of(msgs[i]);
            if (i >= last_user || !strcmp(r, "user") || !strcmp(r, "system") || !strcmp(r, "tool") ||
                !strcmp(r, "assistant"))
                msgs[w++] = msgs[i];
        }
        k = w;
        last_user = find_last_user(msgs, k);
    }
    py_file py = {.dir = dir};
    sbuf b = {.max = max_output, .err = err, .off = with_tools ? 1 : 0, .py = &py};
    puts_(&b, bos ? bos : BOS_DEFAULT);
    for (int i = 0; i < k && !b.rc; i++) {
        if (!cJSON_IsObject(msgs[i])) {
            b.rc =
                fr_fail(err, FR_ERR_FORMAT, "DeepSeek-V3.2 prompt: message %d is not an object", i - b.off);
            break;
        }
        render_message(&b, msgs, i, last_user, thinking);
    }
    if (!b.rc && !b.p) put(&b, "", 0);
    cJSON_Delete(tool_msg);
    free(msgs);
    free(py.src);
    if (b.rc) {
        free(b.p);
        return b.rc;
    }
    *out = b.p;
    if (out_len) *out_len = b.n;
    return FR_OK;
}
